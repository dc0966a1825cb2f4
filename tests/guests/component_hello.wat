;; A WASI p2 command that writes "hello from a component\n" to stdout through
;; wasi:cli/stdout and wasi:io/streams, then returns ok.
(component $command
  (import "wasi:io/error@0.2.0" (instance $error
    (export "error" (type (sub resource)))))
  (alias export $error "error" (type $error-type))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer $command $error-type (type $error-outer))
    (export "error" (type $error (eq $error-outer)))
    (export "output-stream" (type $output-stream (sub resource)))
    (type $stream-error-def (variant (case "last-operation-failed" (own $error)) (case "closed")))
    (export "stream-error" (type $stream-error (eq $stream-error-def)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $output-stream)) (param "contents" (list u8))
        (result (result (error $stream-error)))))))
  (alias export $streams "output-stream" (type $output-stream-type))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer $command $output-stream-type (type $output-stream-outer))
    (export "output-stream" (type $output-stream (eq $output-stream-outer)))
    (export "get-stdout" (func (result (own $output-stream))))))

  (core module $memory
    (memory (export "memory") 1))
  (core instance $memory (instantiate $memory))
  (core func $get-stdout (canon lower (func $stdout "get-stdout")))
  (core func $write (canon lower (func $streams "[method]output-stream.blocking-write-and-flush")
    (memory $memory "memory")))
  (core module $main
    (import "env" "memory" (memory 1))
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    ;; self, contents pointer, contents length, where the result goes
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (data (i32.const 16) "hello from a component\n")
    (func (export "run") (result i32)
      (call $write (call $get-stdout) (i32.const 16) (i32.const 23) (i32.const 64))
      ;; The result's discriminant: 0 when the write succeeded.
      (if (result i32) (i32.load8_u (i32.const 64))
        (then (i32.const 1))
        (else (i32.const 0)))))
  (core instance $main (instantiate $main
    (with "env" (instance $memory))
    (with "host" (instance
      (export "get-stdout" (func $get-stdout))
      (export "write" (func $write))))))
  (func $run (result (result)) (canon lift (core func $main "run")))
  (instance $run (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run)))
