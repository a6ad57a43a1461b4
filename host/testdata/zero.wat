;; zero: the least a plugin can do, to measure the host and server apart
;; from any guest runtime. Its only callback adds x-wasm-callout: zero to
;; every response; it exports no other callback, so the host enters the
;; guest twice per stream (context create, response headers). Build:
;; wat2wasm zero.wat -o zero.wasm
(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-wasm-callout")
  (data (i32.const 32) "zero")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 16) (i32.const 14) (i32.const 32) (i32.const 4)))
    (i32.const 0))
)
