;; Grows its table by 10,000 elements at a time until refused, then traps.
(module
  (table $table 1 funcref)
  (func (export "_start")
    (loop $grow
      (if (i32.eq (table.grow $table (ref.null func) (i32.const 10000)) (i32.const -1))
        (then unreachable))
      (br $grow))))
