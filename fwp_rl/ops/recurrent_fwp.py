"""The recurrent fast weight programmers (Irie, Schlag, Csordas, Schmidhuber, NeurIPS 2021), one step each.

Layout as in ``fwp_rl.ops.delta``: a fast weight matrix W is stored transposed, S = W^T [B, H, dk, dv]
(keys index rows), so W phi(q) is ``einsum("bhk,bhkv->bhv", phi(q), S)``, and every write is the delta
rule W_t = W_{t-1} + beta_t (v_t - W_{t-1} k_t) (x) k_t of ``delta_rule_step``.

- Recurrent Delta Net (RDN), a recurrent slow net: each head's slow net also reads tanh(y_{t-1}) of
  that head through its own recurrent matrix R [d, 3d + 1]:

      [q_t; k_t; v_t; b_t] = P x_t + R^T tanh(y_{t-1})     (P x_t: the caller's projection of x_t)
      beta_t = beta_max sigmoid(b_t)
      W_t = W_{t-1} + beta_t (v_t - W_{t-1} phi(k_t)) (x) phi(k_t)
      y_t = W_t phi(q_t)

- Delta RNN, a recurrent fast net: the fast net's output feeds back through a second fast weight
  matrix R_t, programmed from x_t by its own key kr_t (softmax), value vr_t and rate betar_t:

      z_t = W_t phi(q_t)                                    (W_t: the delta rule above)
      R_t = R_{t-1} + betar_t (vr_t - R_{t-1} kr_t) (x) kr_t
      y_t = z_t + R_t softmax(y_{t-1})

- Delta LSTM, a recurrent fast net with gates: one pair (W^g, R^g) as above for each of the input gate
  i, the cell update u and the output gate o; the input and forget gates are coupled:

      a^g_t = W^g_t phi(q^g_t) + R^g_t softmax(y_{t-1})     (g = i, u, o)
      i_t = sigmoid(a^i_t),  u_t = a^u_t,  o_t = sigmoid(a^o_t)
      c_t = i_t * u_t + (1 - i_t) * c_{t-1}
      y_t = o_t * c_t

These Delta RNN and Delta LSTM are the variants of the paper's main results (its appendix compares
other placements of the activation functions). The Delta RNN and Delta LSTM functions take the
feed-forward part W_t phi(q_t) already computed by ``delta_rule_step``, so that each function is one
equation block above.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from fwp_rl.ops.delta import delta_rule_step


def rdn_step(q: Tensor, k: Tensor, v: Tensor, b: Tensor, R: Tensor, y_prev: Tensor, S: Tensor,
             phi: Callable[[Tensor], Tensor], beta_max: float = 1.0) -> tuple[Tensor, Tensor]:
    """One Recurrent Delta Net step.

    q, k, v [B, H, d] and b [B, H]: the slow net's outputs from x_t, before any activation;
    R [H, d, 3d + 1]: each head's recurrent slow weights (columns q | k | v | b); y_prev [B, H, d];
    S [B, H, dk, d] (dk the size of phi's output) -> (y [B, H, d], S).
    """
    d = y_prev.shape[-1]
    rq, rk, rv, rb = torch.einsum("bhi,hio->bho", torch.tanh(y_prev), R).split([d, d, d, 1], dim=-1)
    beta = beta_max * torch.sigmoid(b + rb.squeeze(-1))
    return delta_rule_step(phi(q + rq), phi(k + rk), v + rv, beta, S)


def delta_rnn_step(z: Tensor, k: Tensor, v: Tensor, beta: Tensor, R: Tensor, y_prev: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """The recurrent part of one Delta RNN step.

    z [B, H, d] = W_t phi(q_t), k [B, H, d] (the recurrent key, already through softmax), v [B, H, d],
    beta [B, H], R [B, H, d, d], y_prev [B, H, d] -> (y [B, H, d], R).
    """
    r, R = delta_rule_step(torch.softmax(y_prev, dim=-1), k, v, beta, R)
    return z + r, R


def delta_lstm_step(z: Tensor, k: Tensor, v: Tensor, beta: Tensor, R: Tensor, y_prev: Tensor, c_prev: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """The recurrent part of one Delta LSTM step; the gates are stacked in dim 1 in the order i, u, o.

    z [B, 3, H, d] = W^g_t phi(q^g_t), k [B, 3, H, d] (recurrent keys, already through softmax),
    v [B, 3, H, d], beta [B, 3, H], R [B, 3, H, d, d], y_prev and c_prev [B, H, d]
    -> (y [B, H, d], c [B, H, d], R).
    """
    G, H = z.shape[1:3]
    query = torch.softmax(y_prev, dim=-1).unsqueeze(1).expand_as(z)
    r, R = delta_rule_step(*(t.flatten(1, 2) for t in (query, k, v, beta, R)))
    a_i, a_u, a_o = (z + r.unflatten(1, (G, H))).unbind(1)
    i, o = torch.sigmoid(a_i), torch.sigmoid(a_o)
    c = i * a_u + (1.0 - i) * c_prev
    return o * c, c, R.unflatten(1, (G, H))
