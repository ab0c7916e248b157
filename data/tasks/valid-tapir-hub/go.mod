module example.com/tapir-hub

go 1.20
