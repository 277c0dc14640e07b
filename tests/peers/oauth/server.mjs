// A real OAuth 2.0 authorization server on loopback for Postern's tests: oidc-provider (the
// certified Node.js implementation) with one confidential client, PKCE (S256) required,
// refresh tokens, token introspection (the provider API stand-ins check bearer tokens with it)
// and revocation, and its development login/consent pages (any user name, any password).
//
// node server.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI ACCESS_TOKEN_TTL_SECONDS
// Prints "listening <issuer>" once it accepts connections.
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri, accessTtl] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    scope: 'openid offline_access Mail.Send https://www.googleapis.com/auth/gmail.send',
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'Mail.Send', 'https://www.googleapis.com/auth/gmail.send'],
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
  },
  ttl: { AccessToken: Number(accessTtl), RefreshToken: 86400, AuthorizationCode: 60, Interaction: 600, Session: 600, Grant: 86400 },
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
});
provider.proxy = false;
// The test reads only the first line; later notices must not kill the server (EPIPE).
process.stdout.on('error', () => {});
const server = provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
