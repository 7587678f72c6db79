module fanin

go 1.22
