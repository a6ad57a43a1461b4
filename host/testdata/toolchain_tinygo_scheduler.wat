;; TinyGo with its scheduler (wasi without -scheduler=none), producers
;; section stripped: the libc allocators its runtime exports, resume and
;; go_scheduler, and the asyncify exports. No proxy_on_memory_allocate, so
;; the host allocates with malloc. guessToolchain must say TinyGo.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "resume"))
  (func (export "go_scheduler"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "free") (param i32))
  (func (export "calloc") (param i32 i32) (result i32) (i32.const 1024))
  (func (export "realloc") (param i32 i32) (result i32) (i32.const 1024))
  (func (export "asyncify_start_unwind") (param i32))
  (func (export "asyncify_stop_unwind"))
  (func (export "asyncify_start_rewind") (param i32))
  (func (export "asyncify_stop_rewind"))
  (func (export "asyncify_get_state") (result i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_context_create") (param i32 i32))
)
