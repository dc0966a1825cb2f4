;; Tries to reach files through file descriptor 3 (the first preopened
;; directory, if any) and reports each attempt on stdout as "path: errno N" or
;; "path: opened":
;;   ../x          read, escaping the directory upwards
;;   /etc/passwd   read, by absolute path
;;   link          read, following a symlink (tests point it at /etc/passwd)
;;   hello.txt     read; when it opens, prints "content: " and its first bytes
;;   new.txt       create for writing; when it opens, writes "written\n"
;; Exits 2 when all three escapes were refused, 0 when any succeeded.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  ;; 0..16: iovec and count; 16: opened fd; 24: read count; 100: newline;
  ;; 200..300: digits; 400..: texts; 1024..1280: read buffer.
  (memory (export "memory") 1)
  (data (i32.const 100) "\n")
  (data (i32.const 400) "../x")
  (data (i32.const 410) "/etc/passwd")
  (data (i32.const 430) "hello.txt")
  (data (i32.const 440) "new.txt")
  (data (i32.const 450) ": errno ")
  (data (i32.const 460) ": opened\n")
  (data (i32.const 470) "written\n")
  (data (i32.const 480) "content: ")
  (data (i32.const 490) "link")

  (func $write_fd (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $write (param $ptr i32) (param $len i32)
    (call $write_fd (i32.const 1) (local.get $ptr) (local.get $len)))

  (func $print_number (param $value i32) (local $at i32)
    (local.set $at (i32.const 300))
    (loop $digit
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $value) (i32.const 10))))
      (local.set $value (i32.div_u (local.get $value) (i32.const 10)))
      (br_if $digit (local.get $value)))
    (call $write (local.get $at) (i32.sub (i32.const 300) (local.get $at))))

  ;; Opens `path` under fd 3 and reports it; returns the errno (0: opened,
  ;; the descriptor is at 16).
  (func $attempt (param $ptr i32) (param $len i32) (param $lookup i32) (param $oflags i32) (param $rights i64)
    (result i32) (local $errno i32)
    (local.set $errno
      (call $path_open (i32.const 3) (local.get $lookup) (local.get $ptr) (local.get $len)
        (local.get $oflags) (local.get $rights) (local.get $rights) (i32.const 0) (i32.const 16)))
    (call $write (local.get $ptr) (local.get $len))
    (if (local.get $errno)
      (then
        (call $write (i32.const 450) (i32.const 8))
        (call $print_number (local.get $errno))
        (call $write (i32.const 100) (i32.const 1)))
      (else
        (call $write (i32.const 460) (i32.const 9))))
    (local.get $errno))

  (func (export "_start") (local $escape_up i32) (local $escape_absolute i32) (local $escape_link i32)
    ;; Rights: fd_read = 2, fd_write = 64. Lookup flag 1 follows symlinks.
    (local.set $escape_up (call $attempt (i32.const 400) (i32.const 4) (i32.const 0) (i32.const 0) (i64.const 2)))
    (local.set $escape_absolute (call $attempt (i32.const 410) (i32.const 11) (i32.const 0) (i32.const 0) (i64.const 2)))
    (local.set $escape_link (call $attempt (i32.const 490) (i32.const 4) (i32.const 1) (i32.const 0) (i64.const 2)))
    (if (i32.eqz (call $attempt (i32.const 430) (i32.const 9) (i32.const 0) (i32.const 0) (i64.const 2)))
      (then
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 256))
        (drop (call $fd_read (i32.load (i32.const 16)) (i32.const 0) (i32.const 1) (i32.const 24)))
        (call $write (i32.const 480) (i32.const 9))
        (call $write (i32.const 1024) (i32.load (i32.const 24)))))
    ;; oflags 1 = O_CREAT.
    (if (i32.eqz (call $attempt (i32.const 440) (i32.const 7) (i32.const 0) (i32.const 1) (i64.const 64)))
      (then (call $write_fd (i32.load (i32.const 16)) (i32.const 470) (i32.const 8))))
    (if (i32.and (i32.ne (local.get $escape_up) (i32.const 0))
          (i32.and (i32.ne (local.get $escape_absolute) (i32.const 0)) (i32.ne (local.get $escape_link) (i32.const 0))))
      (then (call $proc_exit (i32.const 2))))
    (call $proc_exit (i32.const 0))))
