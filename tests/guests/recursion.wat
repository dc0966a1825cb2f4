;; Recurses without end: the run must end with a stack-overflow trap.
(module
  (func $recurse (export "_start")
    (call $recurse)))
