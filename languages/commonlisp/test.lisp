(write-line "Hello world!")
