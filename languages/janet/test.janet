(print "Hello world!")
