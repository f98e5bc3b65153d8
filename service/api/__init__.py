"""The HTTP wing: routes, schemas, the OpenAPI document, middlewares and auth."""
