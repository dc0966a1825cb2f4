;; Prints its arguments, one per line, then a "--" line, then its environment
;; (NAME=value), one per line. Used to check what a guest can see.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; 0..16: iovec and byte count; 16..24: sizes; 100: text; 1024: argv
  ;; pointers; 4096: environ pointers; 8192: argument strings; 65536 (the
  ;; second page) and on: environment strings.
  (memory (export "memory") 3)
  (data (i32.const 100) "\n--\n")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $strlen (param $ptr i32) (result i32) (local $len i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $ptr) (local.get $len)))))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $next)))
    (local.get $len))
  ;; Prints `count` NUL-terminated strings whose pointers start at `ptrs`.
  (func $print_lines (param $count i32) (param $ptrs i32) (local $index i32) (local $text i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $index) (local.get $count)))
        (local.set $text (i32.load (i32.add (local.get $ptrs) (i32.shl (local.get $index) (i32.const 2)))))
        (call $write (local.get $text) (call $strlen (local.get $text)))
        (call $write (i32.const 100) (i32.const 1))
        (local.set $index (i32.add (local.get $index) (i32.const 1)))
        (br $next))))
  (func (export "_start")
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 8192)))
    (call $print_lines (i32.load (i32.const 16)) (i32.const 1024))
    (call $write (i32.const 101) (i32.const 3))
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $environ_get (i32.const 4096) (i32.const 65536)))
    (call $print_lines (i32.load (i32.const 16)) (i32.const 4096))))
