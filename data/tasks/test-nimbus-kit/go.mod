module example.com/nimbus-kit

go 1.20
