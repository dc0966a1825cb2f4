;; Writes 1 GiB of 'x' on stdout in 16,384 writes of 64 KiB, then 64 MiB of
;; 'e' on stderr, then the result line "::sandcron::result 1073741824" on
;; stdout (which must still count although the output was cut long before),
;; and exits 0.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; 0: iovec; 100: the result line; 65536 (the second page): the buffer.
  (memory (export "memory") 2)
  (data (i32.const 100) "\n::sandcron::result 1073741824\n")
  (func $flood (param $fd i32) (param $byte i32) (param $writes i32) (local $count i32)
    (memory.fill (i32.const 65536) (local.get $byte) (i32.const 65536))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $next
      (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $count (i32.add (local.get $count) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $count) (local.get $writes)))))
  (func (export "_start")
    (call $flood (i32.const 1) (i32.const 120) (i32.const 16384))
    (call $flood (i32.const 2) (i32.const 101) (i32.const 1024))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 31))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
