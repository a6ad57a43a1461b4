;; Pre-0.1.0: no proxy_abi_version_* marker, as plugins built before the ABI
;; was versioned. The callbacks are exported (two-argument header
;; callbacks, as in 0.1.0) and the 0.1.0 proxy_get_configuration is
;; imported. Envoy refuses such a module ("Missing or unknown Proxy-Wasm ABI
;; version"); this host loads it with a warning and reads the header arity
;; from the export's type. on_configure accepts only the configuration
;; "pre"; request headers get x-pre-abi: yes.
(module
  (import "env" "proxy_get_configuration" (func $cfg (param i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "x-pre-abi")
  (data (i32.const 32) "yes")
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $cfg (i32.const 100) (i32.const 104)))
    (i32.and
      (i32.eq (i32.load (i32.const 104)) (i32.const 3))
      (i32.eq (i32.and (i32.load (i32.load (i32.const 100))) (i32.const 0xffffff)) (i32.const 0x657270))))
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 16) (i32.const 9) (i32.const 32) (i32.const 3)))
    (i32.const 0))
)
