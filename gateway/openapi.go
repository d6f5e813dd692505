package gateway

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// OpenAPIDocument describes every public endpoint; a test keeps it in
// step with the router.
//
//go:embed openapi.json
var OpenAPIDocument []byte

func serveOpenAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json", OpenAPIDocument)
}
