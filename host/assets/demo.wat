;; The demo job `sandcron dev` seeds: a WASI preview 1 module that prints
;; "hello from sandcron's WebAssembly sandbox: job <name>, tick <instant>".
;; Its binary, demo.wasm, is embedded in sandcron; a unit test checks that it
;; is exactly what this text assembles to (after editing, regenerate it with
;; `SANDCRON_BLESS=1 cargo test -p sandcron --lib demo_module`).
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)

  ;; Text pieces.
  (data (i32.const 0) "hello from sandcron's WebAssembly sandbox: job ")   ;; 47 bytes
  (data (i32.const 64) ", tick ")                                           ;; 7 bytes
  (data (i32.const 80) "\n")
  (data (i32.const 96) "SANDCRON_JOB=")                                     ;; 13 bytes
  (data (i32.const 112) "SANDCRON_TICK=")                                   ;; 14 bytes

  ;; Layout: 1024 environ count, 1028 environ buffer size, 1040 the iovec of
  ;; $print, 1048 and 1056 the (address, length) of the job name and the
  ;; tick, 1088 bytes written, 2048 environ pointers (up to 1536 of them),
  ;; 8192 environ strings (up to 120 KiB).

  ;; Length of the NUL-terminated string at $p.
  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; Whether the string at $s starts with the $len bytes at $prefix.
  (func $starts_with (param $s i32) (param $prefix i32) (param $len i32) (result i32)
    (local $i i32)
    (block $no
      (loop $next
        (if (i32.eq (local.get $i) (local.get $len)) (then (return (i32.const 1))))
        (br_if $no (i32.ne (i32.load8_u (i32.add (local.get $s) (local.get $i)))
                           (i32.load8_u (i32.add (local.get $prefix) (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; The value of the variable whose "NAME=" is the $len bytes at $prefix:
  ;; writes its address and length into the iovec at $iovec (empty if unset).
  (func $lookup (param $prefix i32) (param $len i32) (param $iovec i32)
    (local $i i32) (local $entry i32)
    (i32.store (local.get $iovec) (i32.const 80))
    (i32.store offset=4 (local.get $iovec) (i32.const 0))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.load (i32.const 1024))))
        (local.set $entry (i32.load (i32.add (i32.const 2048) (i32.shl (local.get $i) (i32.const 2)))))
        (if (call $starts_with (local.get $entry) (local.get $prefix) (local.get $len))
          (then
            (i32.store (local.get $iovec) (i32.add (local.get $entry) (local.get $len)))
            (i32.store offset=4 (local.get $iovec)
              (i32.sub (call $strlen (local.get $entry)) (local.get $len)))
            (br $done)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

  ;; Writes the $len bytes at $ptr to stdout. fd_write may write fewer bytes
  ;; than asked (wasmtime writes one buffer per call), so it loops.
  (func $print (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 1040) (local.get $ptr))
        (i32.store (i32.const 1044) (local.get $len))
        (br_if $done (call $fd_write (i32.const 1) (i32.const 1040) (i32.const 1) (i32.const 1088)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 1088))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 1088))))
        (br $more))))

  (func (export "_start")
    (drop (call $environ_sizes_get (i32.const 1024) (i32.const 1028)))
    ;; Read the environment only if it fits the space set aside for it.
    (if (i32.and (i32.le_u (i32.load (i32.const 1024)) (i32.const 1536))
                 (i32.le_u (i32.load (i32.const 1028)) (i32.const 122880)))
      (then (drop (call $environ_get (i32.const 2048) (i32.const 8192))))
      (else (i32.store (i32.const 1024) (i32.const 0))))
    (call $lookup (i32.const 96) (i32.const 13) (i32.const 1048))
    (call $lookup (i32.const 112) (i32.const 14) (i32.const 1056))
    (call $print (i32.const 0) (i32.const 47))
    (call $print (i32.load (i32.const 1048)) (i32.load (i32.const 1052)))
    (call $print (i32.const 64) (i32.const 7))
    (call $print (i32.load (i32.const 1056)) (i32.load (i32.const 1060)))
    (call $print (i32.const 80) (i32.const 1))))
