;; AssemblyScript (0.10-0.17) shape as proxy-runtime builds it with
;; --use abort=abort_proc_exit: no entry point (top-level code runs in the
;; start section), malloc as the only allocator, the runtime's __alloc,
;; __retain and __release exports, and wasi_unstable.proc_exit instead of
;; env.abort. guessToolchain must still say AssemblyScript.
(module
  (import "wasi_unstable" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func $alloc (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "__alloc") (param i32 i32) (result i32) (call $alloc (local.get 0)))
  (func (export "__retain") (param i32) (result i32) (local.get 0))
  (func (export "__release") (param i32))
  (func (export "malloc") (param i32) (result i32) (call $alloc (local.get 0)))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
)
