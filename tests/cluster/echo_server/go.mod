module ml-endpoints.local/echo-server

go 1.24
