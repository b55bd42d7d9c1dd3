// Swagger UI on /openapi.json. validatorUrl: null keeps it from asking validator.swagger.io
// about the document: no request leaves the host.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
