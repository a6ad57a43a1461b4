;; proxy-wasm-cpp-sdk as em++ builds it (-sSTANDALONE_WASM --no-entry
;; -sEXPORTED_FUNCTIONS=_malloc) without memory growth: no
;; emscripten_notify_memory_growth import, and a producers section naming
;; only clang, but Emscripten's stack helpers among the exports and the C++
;; SDK's callbacks (proxy_validate_configuration, proxy_on_foreign_function).
;; guessToolchain must say C++ (Emscripten), never TinyGo.
;; append-custom-section producers processed-by:clang-17.0.0
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (global $sp (mut i32) (i32.const 65536))
  (func (export "_initialize"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "stackSave") (result i32) (global.get $sp))
  (func (export "stackRestore") (param i32) (global.set $sp (local.get 0)))
  (func (export "stackAlloc") (param i32) (result i32) (global.get $sp))
  (func (export "emscripten_stack_init"))
  (func (export "emscripten_stack_get_end") (result i32) (i32.const 0))
  (func (export "__errno_location") (result i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_validate_configuration") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_foreign_function") (param i32 i32 i32))
)
