;; Spins forever without any host call: only fuel, the timeout or a kill stop it.
(module
  (func (export "_start")
    (loop $forever
      (br $forever))))
