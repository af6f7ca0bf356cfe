// ESLint flat config: typescript-eslint recommended rules plus Nx module boundaries.
// Project tags (project.json) encode DESIGN.md's dependency directions:
//   apps -> libs; ml, data, aggregation, protocol, crypto -> fl-core; secagg -> fl-core, protocol
//   inference (prediction on new images: tiles from data, models from ml) -> fl-core, ml, data;
//   (its site adapter answers the protocol's secure-aggregation messages), crypto (the project's one
//   crypto module: keys, boxes, signatures, X25519); fl-core -> nothing.
// Libraries may not import NestJS, TypeORM or socket.io.
const nx = require('@nx/eslint-plugin');
const tseslint = require('typescript-eslint');

const serverOnly = ['@nestjs/*', 'typeorm', 'typeorm-pglite', 'socket.io', 'socket.io-client', 'pg'];
const onlyCore = (scope) => ({
  sourceTag: `scope:${scope}`,
  onlyDependOnLibsWithTags: ['scope:fl-core'],
  bannedExternalImports: serverOnly,
});

module.exports = [
  { ignores: ['**/node_modules/**', '**/dist/**', '**/.nx/**', 'tmp/**', '**/*.cjs', '**/*.js'] },
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { '@nx': nx },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@nx/enforce-module-boundaries': [
        'error',
        {
          enforceBuildableLibDependency: false,
          allow: [],
          depConstraints: [
            { sourceTag: 'scope:fl-core', onlyDependOnLibsWithTags: [], bannedExternalImports: serverOnly },
            onlyCore('protocol'),
            onlyCore('crypto'),
            onlyCore('aggregation'),
            { ...onlyCore('secagg'), onlyDependOnLibsWithTags: ['scope:fl-core', 'scope:protocol', 'scope:crypto'] },
            { ...onlyCore('ml'), bannedExternalImports: [...serverOnly, 'sharp'] },
            onlyCore('data'),
            { ...onlyCore('inference'), onlyDependOnLibsWithTags: ['scope:fl-core', 'scope:ml', 'scope:data'] },
            { sourceTag: 'type:app', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:test', onlyDependOnLibsWithTags: ['type:lib', 'type:app', 'type:tool'] },
            { sourceTag: 'type:tool', onlyDependOnLibsWithTags: ['type:lib'] },
            { sourceTag: 'type:bench', onlyDependOnLibsWithTags: ['type:lib', 'type:tool'] },
          ],
        },
      ],
    },
  },
];
