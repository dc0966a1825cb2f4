;; Imports a host function that is not WASI: refused at upload, and unlinkable.
(module
  (import "env" "host_fn" (func $host_fn))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (func (export "_start")
    (call $host_fn)))
