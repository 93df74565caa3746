// One lint configuration for the product (src/), its lab (lab/), tests and benchmarks. Formatting
// is Prettier's (.prettierrc.json); this file checks what a formatter cannot.
import { builtinModules } from 'node:module';
import js from '@eslint/js';
import simpleImportSort from 'eslint-plugin-simple-import-sort';
import tseslint from 'typescript-eslint';

const nodeBuiltins = builtinModules.filter((m) => !m.startsWith('_')).flatMap((m) => [m, `node:${m}`]);
const noLab = { regex: '(^|/)lab(/|$)', message: 'src/ is the product: it never imports the lab.' };

export default tseslint.config(
  { ignores: ['node_modules/', 'lib/', '.lab/', 'test-artifacts/', 'bench/results/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { 'simple-import-sort': simpleImportSort },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'simple-import-sort/imports': 'error',
      'simple-import-sort/exports': 'error',
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [noLab] }] },
  },
  {
    // The drivers, procfs readers, storage and the guard know nothing of Temporal: activities map their errors.
    files: ['src/drivers/**/*.ts', 'src/procfs/**/*.ts', 'src/storage/**/*.ts', 'src/volume-users/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            noLab,
            {
              group: ['@temporalio/*'],
              message: 'src/drivers, src/procfs, src/storage and src/volume-users must not depend on Temporal.',
            },
          ],
        },
      ],
    },
  },
  {
    // Workflow code runs in Temporal's deterministic sandbox: no I/O, no Node built-ins, no host code.
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({
            name,
            message: 'Workflow code must not use Node built-ins: I/O belongs in activities.',
          })),
          patterns: [
            noLab,
            {
              regex: '^\\.\\./(drivers|storage|volume-users)(/|$)',
              message: 'Workflows reach hosts only through activities.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: {
      globals: {
        require: 'readonly',
        module: 'writable',
        process: 'readonly',
        __dirname: 'readonly',
        console: 'readonly',
      },
    },
  },
);
