#!/bin/sh
# Runs a SQLite3 program in the sqlite3 shell's safe mode.
# $1 is the program's file name, chosen by the engine (main.sql by default).
# -safe refuses .shell/.system/.import/.output/.read/.load, ATTACH and
# readfile()/writefile(); it also refuses ".read", so the program is fed on
# stdin, followed by the run's own stdin (more SQL, as in `cat f - | sqlite3`).
# Never use -init: the shell reads that file before it turns safe mode on.
{ cat -- "$1" && echo; exec cat; } | exec /usr/bin/sqlite3 -safe -bail -batch -noheader -list :memory:
