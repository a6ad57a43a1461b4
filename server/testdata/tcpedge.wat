;; tcpedge: a tiny 0.2.x TCP filter for the network_ext_proc server's edge
;; cases. The first byte of the downstream data the host holds chooses:
;;   P  Pause (the host holds the bytes and calls again with the next
;;      frame added) until the held data ends with '.', then continue
;;   A  Pause, and resume from the next proxy_on_tick (20 ms), through
;;      proxy_set_effective_context and proxy_continue_stream(Downstream)
;;   X  Pause, and close the connection from the next tick
;;   C  proxy_close_stream(Downstream)
;;   R  proxy_send_local_response (an abortive close on TCP)
;;   T  trap (unreachable)
;;   L  loop forever (the call deadline fails the instance)
;;   S  replace the data with the property source.address (or "none") and
;;      set the property note=hi
;;   anything else: continue unchanged
;; Upstream data follows the same P and T rules; anything else continues.
;; With a plugin configuration starting with N, proxy_on_new_connection
;; pauses and the next tick resumes the downstream direction.
;; Build: wat2wasm tcpedge.wat -o tcpedge.wasm
(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_get_property" (func $getprop (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $setprop (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  ;; the context a tick acts on, and what it does: 1 continue, 2 close
  (global $ctx (mut i32) (i32.const 0))
  (global $what (mut i32) (i32.const 0))
  (global $pauseconn (mut i32) (i32.const 0))
  (data (i32.const 16) "source\00address")
  (data (i32.const 40) "none")
  (data (i32.const 48) "note")
  (data (i32.const 56) "hi")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    ;; a bump allocator that wraps around: the tests' data is small
    (if (i32.gt_u (global.get $heap) (i32.const 60000))
      (then (global.set $heap (i32.const 4096))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 0))
      (then
        (drop (call $get (i32.const 7) (i32.const 0) (i32.const 1) (i32.const 100) (i32.const 104)))
        (if (i32.eq (i32.load8_u (i32.load (i32.const 100))) (i32.const 78)) ;; N
          (then (global.set $pauseconn (i32.const 1))))))
    (i32.const 1))
  (func $arm (param $ctx i32) (param $what i32)
    (global.set $ctx (local.get $ctx))
    (global.set $what (local.get $what))
    (drop (call $tick (i32.const 20))))
  ;; $held returns whether the data of buffer $bt (length $len) starts
  ;; with P and does not end with '.': the P rule says pause.
  (func $held (param $bt i32) (param $len i32) (result i32)
    (local $p i32)
    (drop (call $get (local.get $bt) (i32.const 0) (local.get $len) (i32.const 100) (i32.const 104)))
    (local.set $p (i32.load (i32.const 100)))
    (i32.and
      (i32.eq (i32.load8_u (local.get $p)) (i32.const 80))
      (i32.ne (i32.load8_u (i32.sub (i32.add (local.get $p) (local.get $len)) (i32.const 1))) (i32.const 46))))
  (func (export "proxy_on_new_connection") (param $ctx i32) (result i32)
    (if (global.get $pauseconn)
      (then (call $arm (local.get $ctx) (i32.const 1)) (return (i32.const 1))))
    (i32.const 0))
  (func (export "proxy_on_tick") (param i32)
    (drop (call $tick (i32.const 0)))
    (if (i32.eqz (global.get $ctx)) (then (return)))
    (if (i32.ne (call $effective (global.get $ctx)) (i32.const 0)) (then (return)))
    (if (i32.eq (global.get $what) (i32.const 1))
      (then (drop (call $continue (i32.const 2)))))
    (if (i32.eq (global.get $what) (i32.const 2))
      (then (drop (call $close (i32.const 2)))))
    (global.set $ctx (i32.const 0)))
  (func (export "proxy_on_downstream_data") (param $ctx i32) (param $len i32) (param $eos i32) (result i32)
    (local $c i32) (local $n i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const 0))))
    (drop (call $get (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 100) (i32.const 104)))
    (local.set $c (i32.load8_u (i32.load (i32.const 100))))
    (if (i32.eq (local.get $c) (i32.const 80))                                        ;; P
      (then (return (call $held (i32.const 2) (local.get $len)))))
    (if (i32.eq (local.get $c) (i32.const 65))                                        ;; A
      (then (call $arm (local.get $ctx) (i32.const 1)) (return (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 88))                                        ;; X
      (then (call $arm (local.get $ctx) (i32.const 2)) (return (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 67))                                        ;; C
      (then (drop (call $close (i32.const 2))) (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 82))                                        ;; R
      (then
        (drop (call $local (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 84)) (then unreachable))                    ;; T
    (if (i32.eq (local.get $c) (i32.const 76)) (then (loop $l (br $l))))              ;; L
    (if (i32.eq (local.get $c) (i32.const 83))                                        ;; S
      (then
        (drop (call $setprop (i32.const 48) (i32.const 4) (i32.const 56) (i32.const 2)))
        (if (i32.eqz (call $getprop (i32.const 16) (i32.const 14) (i32.const 100) (i32.const 104)))
          (then (drop (call $set (i32.const 2) (i32.const 0) (local.get $len)
                  (i32.load (i32.const 100)) (i32.load (i32.const 104)))))
          (else (drop (call $set (i32.const 2) (i32.const 0) (local.get $len) (i32.const 40) (i32.const 4)))))))
    (i32.const 0))
  (func (export "proxy_on_upstream_data") (param $ctx i32) (param $len i32) (param i32) (result i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const 0))))
    (drop (call $get (i32.const 3) (i32.const 0) (i32.const 1) (i32.const 100) (i32.const 104)))
    (if (i32.eq (i32.load8_u (i32.load (i32.const 100))) (i32.const 84)) (then unreachable)) ;; T
    (call $held (i32.const 3) (local.get $len)))
  (func (export "proxy_on_downstream_connection_close") (param i32 i32))
  (func (export "proxy_on_upstream_connection_close") (param i32 i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
