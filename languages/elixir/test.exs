IO.puts("Hello world!")
