/** The Hono environment of every router: bindings typed by `wrangler types`. */
export type AppEnv = { Bindings: Env }
