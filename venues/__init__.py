"""The built-in venue plugins (Raydium, Meteora) and the simulated chain they trade on.

Each venue is a plugin like any third party's: it imports only the contract in
`orderengine.venue` (and the token registry), and is found through its entry
point. The pool arithmetic (`cpmm`, `dlmm`) is pure; `chain` is the shared,
database-backed ledger the pools and transactions live in.
"""
