;; Old TinyGo's js target: stdout through env.io_get_stdout and
;; env.resource_write, which the host does not serve (the module does not
;; load), and no producers section. guessToolchain must still say TinyGo.
(module
  (import "env" "io_get_stdout" (func $stdout (result i32)))
  (import "env" "resource_write" (func $write (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start"))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
)
