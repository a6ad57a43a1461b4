;; Imports a function no host offers, one with a wrong signature, and
;; memory; exports no allocator.
(module
  (import "env" "proxy_inject_encoded_data_to_filter_chain" (func (param i32 i32) (result i32)))
  (import "env" "proxy_log" (func (param i32 i32) (result i32)))
  (import "env" "memory" (memory 1))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
)
