;; edge: a tiny 0.2.x plugin for the server's edge cases. Its behaviour is
;; chosen by the first byte of the request header x-act:
;;   c  request headers: proxy_close_stream(HttpRequest), Pause
;;   p  request headers: proxy_set_property note=hello and bin=\xff,
;;      proxy_clear_route_cache, :path = /rewritten
;;   m  request headers: proxy_set_property note=hello, nothing else (an
;;      answer that changes nothing but carries dynamic metadata)
;;   f  request headers: set host, :method, x-envoy-foo (Envoy refuses them),
;;      remove :path (ignored by Envoy), add x-ok 1 and 2, remove x-gone
;;   b  request body: Pause until end of stream, then replace the body with
;;      "replaced" (keeping content-length) and add request header
;;      x-body-seen: 1
;;   l  response headers: set request header x-late (too late for Envoy)
;;   r  response body: Pause until end of stream, then replace it with "R"
;; Every response gets x-wat: resp. Build: wat2wasm edge.wat -o edge.wasm
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $setbuf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $setprop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_clear_route_cache" (func $clearroute (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "x-act")
  (data (i32.const 32) "note")
  (data (i32.const 40) "hello")
  (data (i32.const 48) "bin")
  (data (i32.const 52) "\ff")
  (data (i32.const 64) ":path")
  (data (i32.const 80) "/rewritten")
  (data (i32.const 96) "host")
  (data (i32.const 104) "evil")
  (data (i32.const 112) ":method")
  (data (i32.const 120) "PUT")
  (data (i32.const 128) "x-envoy-foo")
  (data (i32.const 144) "1")
  (data (i32.const 148) "2")
  (data (i32.const 160) "x-ok")
  (data (i32.const 168) "x-gone")
  (data (i32.const 176) "replaced")
  (data (i32.const 192) "x-body-seen")
  (data (i32.const 208) "x-wat")
  (data (i32.const 216) "resp")
  (data (i32.const 224) "x-late")
  (data (i32.const 232) "R")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
  ;; $act returns the first byte of request header x-act, or 0.
  (func $act (result i32)
    (if (i32.ne (call $get (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 1000) (i32.const 1004)) (i32.const 0))
      (then (return (i32.const 0))))
    (if (i32.eqz (i32.load (i32.const 1004))) (then (return (i32.const 0))))
    (i32.load8_u (i32.load (i32.const 1000))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $a i32)
    (local.set $a (call $act))
    (if (i32.eq (local.get $a) (i32.const 99)) ;; 'c'
      (then
        (drop (call $close (i32.const 0)))
        (return (i32.const 1))))
    (if (i32.eq (local.get $a) (i32.const 112)) ;; 'p'
      (then
        (drop (call $setprop (i32.const 32) (i32.const 4) (i32.const 40) (i32.const 5)))
        (drop (call $setprop (i32.const 48) (i32.const 3) (i32.const 52) (i32.const 1)))
        (drop (call $clearroute))
        (drop (call $replace (i32.const 0) (i32.const 64) (i32.const 5) (i32.const 80) (i32.const 10)))))
    (if (i32.eq (local.get $a) (i32.const 109)) ;; 'm'
      (then
        (drop (call $setprop (i32.const 32) (i32.const 4) (i32.const 40) (i32.const 5)))))
    (if (i32.eq (local.get $a) (i32.const 102)) ;; 'f'
      (then
        (drop (call $replace (i32.const 0) (i32.const 96) (i32.const 4) (i32.const 104) (i32.const 4)))
        (drop (call $replace (i32.const 0) (i32.const 112) (i32.const 7) (i32.const 120) (i32.const 3)))
        (drop (call $replace (i32.const 0) (i32.const 128) (i32.const 11) (i32.const 144) (i32.const 1)))
        (drop (call $remove (i32.const 0) (i32.const 64) (i32.const 5)))
        (drop (call $add (i32.const 0) (i32.const 160) (i32.const 4) (i32.const 144) (i32.const 1)))
        (drop (call $add (i32.const 0) (i32.const 160) (i32.const 4) (i32.const 148) (i32.const 1)))
        (drop (call $remove (i32.const 0) (i32.const 168) (i32.const 6)))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $act) (i32.const 98)) (then (return (i32.const 0)))) ;; 'b'
    (if (i32.eqz (local.get 2)) (then (return (i32.const 1))))
    (drop (call $setbuf (i32.const 0) (i32.const 0) (local.get 1) (i32.const 176) (i32.const 8)))
    (drop (call $add (i32.const 0) (i32.const 192) (i32.const 11) (i32.const 144) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 208) (i32.const 5) (i32.const 216) (i32.const 4)))
    (if (i32.eq (call $act) (i32.const 108)) ;; 'l'
      (then (drop (call $replace (i32.const 0) (i32.const 224) (i32.const 6) (i32.const 144) (i32.const 1)))))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (if (i32.ne (call $act) (i32.const 114)) (then (return (i32.const 0)))) ;; 'r'
    (if (i32.eqz (local.get 2)) (then (return (i32.const 1))))
    (drop (call $setbuf (i32.const 1) (i32.const 0) (local.get 1) (i32.const 232) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32) (i32.const 0))
)
