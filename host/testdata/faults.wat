;; Misbehaviour on demand, for HTTP and TCP. on_request_headers reads the
;; request header x-fault, on_downstream_data the first byte of the data,
;; and: "t" (trap) hits unreachable; "l" (loop) spins forever; "o" (oom)
;; grows memory until the limit, then traps as runtimes do on allocation
;; failure; "e" (exit) calls proc_exit; "a" (allocator exit) makes the
;; allocator call proc_exit when the host next allocates, and then writes
;; to memory after the host call returns, as guest code would (the host
;; must never return into it: proc_exit has closed the module and its
;; memory). Anything else continues, and adds
;; x-ok to an HTTP response. The allocator is a bump allocator reset at
;; every callback, so it never runs out however many streams come.
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $getbuf (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (global $exitInAlloc (mut i32) (i32.const 0))
  (data (i32.const 16) "x-fault")
  (data (i32.const 32) "x-ok")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (if (global.get $exitInAlloc) (then (call $exit (i32.const 4))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  ;; $fault misbehaves as the byte c says, or returns.
  (func $fault (param $c i32)
    (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable))          ;; t
    (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $l (br $l))))    ;; l
    (if (i32.eq (local.get $c) (i32.const 111))                              ;; o
      (then
        (loop $grow
          (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))
    (if (i32.eq (local.get $c) (i32.const 101)) (then (call $exit (i32.const 3)))) ;; e
    (if (i32.eq (local.get $c) (i32.const 97))                               ;; a
      (then
        (global.set $exitInAlloc (i32.const 1))
        (drop (call $get (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 100) (i32.const 104)))
        (i32.store (i32.const 200) (i32.load (i32.const 100))))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 4096))
    (if (call $get (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 100) (i32.const 104))
      (then (return (i32.const 0))))
    (call $fault (i32.load8_u (i32.load (i32.const 100))))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 32) (i32.const 4) (i32.const 32) (i32.const 4)))
    (i32.const 0))
  (func (export "proxy_on_new_connection") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_downstream_data") (param i32) (param $len i32) (param i32) (result i32)
    (global.set $heap (i32.const 4096))
    (if (i32.eqz (local.get $len)) (then (return (i32.const 0))))
    (if (call $getbuf (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 100) (i32.const 104))
      (then (return (i32.const 0))))
    (call $fault (i32.load8_u (i32.load (i32.const 100))))
    (i32.const 0))
  (func (export "proxy_on_upstream_data") (param i32 i32 i32) (result i32) (i32.const 0))
)
