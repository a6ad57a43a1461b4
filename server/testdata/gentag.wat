;; gentag: tags both directions of every stream with its plugin
;; configuration, so that hot-swap tests can tell which plugin generation
;; served each phase of a stream: request headers get x-gen-req: CONFIG,
;; response headers x-gen: CONFIG. on_configure refuses an empty
;; configuration and traps on the configuration "trap".
;; Build: wat2wasm gentag.wat -o gentag.wasm
(module
  (import "env" "proxy_get_buffer_bytes" (func $getbuf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $tag (mut i32) (i32.const 0))
  (global $taglen (mut i32) (i32.const 0))
  (data (i32.const 16) "x-gen-req")
  (data (i32.const 32) "x-gen")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  ;; Buffer type 7 is the plugin configuration.
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.eqz (local.get $size)) (then (return (i32.const 0))))
    (if (call $getbuf (i32.const 7) (i32.const 0) (local.get $size) (i32.const 48) (i32.const 52))
      (then (return (i32.const 0))))
    (global.set $tag (i32.load (i32.const 48)))
    (global.set $taglen (i32.load (i32.const 52)))
    (if (i32.and (i32.eq (global.get $taglen) (i32.const 4))
                 (i32.eq (i32.load (global.get $tag)) (i32.const 0x70617274))) ;; "trap"
      (then unreachable))
    (i32.const 1))
  ;; Map type 0 is the request headers, 2 the response headers.
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 16) (i32.const 9) (global.get $tag) (global.get $taglen)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 32) (i32.const 5) (global.get $tag) (global.get $taglen)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
