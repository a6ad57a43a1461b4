;; C built as a WASI command (clang's default): _start, malloc and free
;; exported, fd_write imported, but neither proxy_on_memory_allocate nor
;; calloc and realloc. guessToolchain must say C/C++ (clang).
;; append-custom-section producers processed-by:clang-19.1.7
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "free") (param i32))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
)
