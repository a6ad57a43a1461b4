;; A C plugin as clang and wasi-libc build it (-mexec-model=reactor,
;; -Wl,--export=malloc -Wl,--export=free, like testdata/toolchains/c) that
;; also exports proxy_on_memory_allocate, as some C plugins do: everything
;; TinyGo's old shape has but _start. guessToolchain must say C/C++ (clang).
;; append-custom-section producers processed-by:clang-19.1.7
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_initialize"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "free") (param i32))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
)
