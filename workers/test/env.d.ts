// Types `exports` from `cloudflare:workers` in edge tests as this worker's main module.
declare namespace Cloudflare {
  interface GlobalProps {
    mainModule: typeof import('../index.ts')
  }
}
