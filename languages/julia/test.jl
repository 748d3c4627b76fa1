println("Hello world!")
