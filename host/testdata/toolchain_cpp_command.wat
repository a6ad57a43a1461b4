;; C++ built as a WASI command with every symbol exported: it has TinyGo's
;; old shape (_start, proxy_on_memory_allocate, malloc and free) but also
;; Itanium-mangled names and __wasm_call_ctors. guessToolchain must say
;; C/C++ (clang).
;; append-custom-section producers processed-by:clang-19.1.7
(module
  (memory (export "memory") 1)
  (func (export "__wasm_call_ctors"))
  (func (export "_start"))
  (func (export "_ZN6plugin7onStartEv") (result i32) (i32.const 1))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "free") (param i32))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
)
