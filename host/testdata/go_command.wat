;; Stands for a Go program built without -buildmode=c-shared: it has Go's
;; build id section and only _start, which exits. wabt 1.0.32 cannot emit
;; custom sections, so the fixture builder appends it:
;; append-custom-section go:buildid fake-build-id
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "_start") (call $exit (i32.const 0)))
)
