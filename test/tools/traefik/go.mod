module github.com/tollgate/tollgate/test/tools/traefik

go 1.26.8
