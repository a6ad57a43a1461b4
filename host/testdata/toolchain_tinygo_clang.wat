;; Old TinyGo (2020-2022, -target=wasi -scheduler=none) as the Go SDK builds
;; it: a command module whose only allocator is the SDK's
;; proxy_on_memory_allocate, which prints through fd_write, and whose
;; producers section names only clang. guessToolchain must say TinyGo, not
;; C/C++. The fixture builder appends the section as text; "clang" is what
;; guessToolchain reads in it:
;; append-custom-section producers processed-by:clang-11.0.0
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
)
