;; Grows its memory by 1 MiB at a time until refused, then traps the way a
;; Rust program aborts on a failed allocation.
(module
  (memory 1)
  (func (export "_start")
    (loop $grow
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1))
        (then unreachable))
      (br $grow))))
