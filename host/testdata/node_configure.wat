;; Reads the bootstrap node as Istio's stats plugin does, outside any
;; stream: proxy_on_vm_start refuses without node.id; proxy_on_configure
;; refuses without node, node.metadata, node.id or node.metadata.NAME
;; ("cannot parse local node metadata" in Istio), then logs
;; node.metadata.NAME at info.
(module
  (import "env" "proxy_get_property" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 200) "node")
  (data (i32.const 208) "node\00metadata")
  (data (i32.const 224) "node\00metadata\00NAME")
  (data (i32.const 248) "node\00id")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  ;; $has: proxy_get_property(path) answers OK; the value is at (100, 104).
  (func $has (param $p i32) (param $n i32) (result i32)
    (i32.eqz (call $get (local.get $p) (local.get $n) (i32.const 100) (i32.const 104))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $has (i32.const 248) (i32.const 7)))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (if (i32.eqz (call $has (i32.const 200) (i32.const 4))) (then (return (i32.const 0))))
    (if (i32.eqz (call $has (i32.const 208) (i32.const 13))) (then (return (i32.const 0))))
    (if (i32.eqz (call $has (i32.const 248) (i32.const 7))) (then (return (i32.const 0))))
    (if (i32.eqz (call $has (i32.const 224) (i32.const 18))) (then (return (i32.const 0))))
    (drop (call $log (i32.const 2) (i32.load (i32.const 100)) (i32.load (i32.const 104))))
    (i32.const 1))
)
