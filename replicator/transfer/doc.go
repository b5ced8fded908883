// Package transfer holds what an adopter configures and matches about the
// transfers between the sites, for every kind of replicable: the
// credentials a secondary signs its requests with ([Credentials]), how the
// primary looks up their secrets ([Secrets], [StaticSecrets],
// [NewStaticSecrets]), and the errors a failed transfer matches
// ([ErrMissingOnPrimary], [ErrRecordNotFound], [ErrUnauthorized],
// [ErrTimeout], ...), which the registry records as sync failures.
//
// Every request carries a token that opens one record of one type for at
// most [TokenLifetimeMax]: "Authorization: Geo <access key>:<JWT>", the JWT
// signed with HS256 by the secondary's secret, which never travels. The
// endpoint itself (replicator.Primary.Handler, under [TransferPathPrefix]),
// the token signing and the downloader are the engines' and not part of
// the API. TLS between the sites is the deployment's: the tokens protect
// against forged and replayed requests, not against an eavesdropper
// reading the bytes (geo's [security policy] gives the whole model).
//
// [security policy]: https://github.com/geoframework/geo/blob/main/SECURITY.md
package transfer
