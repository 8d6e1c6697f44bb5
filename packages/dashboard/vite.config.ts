import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// Served by the service at /dashboard (src/http/dashboard.ts): hashed assets under /dashboard/assets.
export default defineConfig({
  base: '/dashboard/',
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false, assetsInlineLimit: 0 },
});
