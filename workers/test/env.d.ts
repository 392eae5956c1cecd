// Types `exports` from `cloudflare:workers` in edge tests as this worker's main module.
declare namespace Cloudflare {
  interface GlobalProps {
    mainModule: typeof import('../index.ts')
  }
}

// Vitest passes VITE_-prefixed environment variables into workerd as import.meta.env (the fuzz tests'
// seed and run count, workers/test/fuzz-routes.test.ts).
interface ImportMetaEnv {
  readonly VITE_EDGE_FUZZ_SEED?: string
  readonly VITE_EDGE_FUZZ_RUNS?: string
}
interface ImportMeta {
  readonly env: ImportMetaEnv
}
