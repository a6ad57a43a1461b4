;; ABI 0.1.0 headers without a pause, for end-to-end tests through ext_proc
;; (abi_010.wat pauses request headers until its body callback, which only
;; an in-process test can drive: Envoy, and so the emulator, deliver no body
;; to a filter that holds its headers). Two-argument header callbacks;
;; proxy_get_configuration, proxy_clear_route_cache and
;; proxy_continue_response are the 0.1.0 imports. Request headers get
;; x-abi-010 with the configuration as value and the route cache is
;; cleared; response headers get x-abi-010-response: yes.
(module
  (import "env" "proxy_get_configuration" (func $cfg (param i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_clear_route_cache" (func $crc (result i32)))
  (import "env" "proxy_continue_response" (func $continue_resp (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "x-abi-010")
  (data (i32.const 32) "x-abi-010-response")
  (data (i32.const 64) "yes")
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  ;; The configuration's pointer and size stay at 100 and 104.
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (i32.eqz (call $cfg (i32.const 100) (i32.const 104))))
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 16) (i32.const 9) (i32.load (i32.const 100)) (i32.load (i32.const 104))))
    (drop (call $crc))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32) (result i32)
    (drop (call $continue_resp))
    (drop (call $add (i32.const 2) (i32.const 32) (i32.const 18) (i32.const 64) (i32.const 3)))
    (i32.const 0))
)
