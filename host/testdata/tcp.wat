;; A TCP filter. Downstream data is held (Pause) until it holds a newline or
;; the stream ends, then forwarded with ">" prepended; "DENY" closes the
;; connection and "RESET" sends a local response (an abortive close).
;; Upstream data gets "<" appended. The close callbacks record their peer
;; type at 300 (downstream) and 304 (upstream).
(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) ">")
  (data (i32.const 20) "<")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_new_connection") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_downstream_data") (param $ctx i32) (param $len i32) (param $eos i32) (result i32)
    (local $p i32) (local $i i32) (local $nl i32)
    (drop (call $get (i32.const 2) (i32.const 0) (local.get $len) (i32.const 100) (i32.const 104)))
    (local.set $p (i32.load (i32.const 100)))
    (if (i32.and (i32.ge_u (local.get $len) (i32.const 4))
                 (i32.eq (i32.load (local.get $p)) (i32.const 0x594e4544))) ;; "DENY"
      (then (drop (call $close (i32.const 2))) (return (i32.const 1))))
    (if (i32.and (i32.ge_u (local.get $len) (i32.const 5))
                 (i32.eq (i32.load (local.get $p)) (i32.const 0x45534552))) ;; "RESE"
      (then
        (drop (call $local (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 0))))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eq (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 10))
          (then (local.set $nl (i32.const 1)) (br $done)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (if (i32.and (i32.eqz (local.get $nl)) (i32.eqz (local.get $eos)))
      (then (return (i32.const 1))))
    (drop (call $set (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 16) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_upstream_data") (param $ctx i32) (param $len i32) (param i32) (result i32)
    (drop (call $set (i32.const 3) (local.get $len) (i32.const 0) (i32.const 20) (i32.const 1)))
    (i32.const 0))
  (func (export "proxy_on_downstream_connection_close") (param i32 i32) (i32.store (i32.const 300) (local.get 1)))
  (func (export "proxy_on_upstream_connection_close") (param i32 i32) (i32.store (i32.const 304) (local.get 1)))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
)
