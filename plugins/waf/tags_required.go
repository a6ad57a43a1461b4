//go:build !no_fs_access

package main

// Coraza probes the filesystem at start unless built with no_fs_access, and
// a plugin has no filesystem: build with the tags in the file "tags" next
// to this one (make plugins does). This reference fails such a build with
// a name that says so.
var _ = build_plugins_waf_with_the_tags_in_plugins_waf_tags
