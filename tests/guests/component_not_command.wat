;; A component that exports a function but not wasi:cli/run: not a command.
(component
  (core module $main
    (func (export "hello") (result i32)
      (i32.const 42)))
  (core instance $main (instantiate $main))
  (func $hello (result u32) (canon lift (core func $main "hello")))
  (export "hello" (func $hello)))
