// ThumbHash decoding: a port of thumbHashToRGBA and thumbHashToApproximateAspectRatio from the
// reference implementation, the thumbhash project by Evan Wallace (https://github.com/evanw/thumbhash),
// MIT License, Copyright (c) 2023 Evan Wallace. Ported from its Rust version (the `thumbhash`
// crate this service encodes with), so both ends agree bit for bit.
"use strict";

(function (global) {
  // The aspect ratio (width / height) the hash was made from.
  function thumbHashToApproximateAspectRatio(hash) {
    if (hash.length < 5) throw new Error("thumbhash: too short");
    const hasAlpha = (hash[2] & 0x80) !== 0;
    const lMax = hasAlpha ? 5 : 7;
    const lMin = hash[3] & 7;
    const isLandscape = (hash[4] & 0x80) !== 0;
    const lx = isLandscape ? lMax : lMin;
    const ly = isLandscape ? lMin : lMax;
    return lx / ly;
  }

  // Decode a ThumbHash (bytes) to {w, h, rgba} with w and h at most 32.
  function thumbHashToRGBA(hash) {
    const ratio = thumbHashToApproximateAspectRatio(hash);
    let at = 0;
    const byte = () => {
      if (at >= hash.length) throw new Error("thumbhash: truncated");
      return hash[at++];
    };

    // The constants.
    const header24 = byte() | (byte() << 8) | (byte() << 16);
    const header16 = byte() | (byte() << 8);
    const lDc = (header24 & 63) / 63;
    const pDc = ((header24 >> 6) & 63) / 31.5 - 1;
    const qDc = ((header24 >> 12) & 63) / 31.5 - 1;
    const lScale = ((header24 >> 18) & 31) / 31;
    const hasAlpha = header24 >> 23 !== 0;
    const pScale = ((header16 >> 3) & 63) / 63;
    const qScale = ((header16 >> 9) & 63) / 63;
    const isLandscape = header16 >> 15 !== 0;
    const lMax = hasAlpha ? 5 : 7;
    const lx = Math.max(3, isLandscape ? lMax : header16 & 7);
    const ly = Math.max(3, isLandscape ? header16 & 7 : lMax);
    let aDc = 1;
    let aScale = 1;
    if (hasAlpha) {
      const header8 = byte();
      aDc = (header8 & 15) / 15;
      aScale = (header8 >> 4) / 15;
    }

    // The varying factors, four bits each (saturation boosted 1.25x against quantization).
    let pending = null;
    const channel = (nx, ny, scale) => {
      const ac = [];
      for (let cy = 0; cy < ny; cy++) {
        for (let cx = cy > 0 ? 0 : 1; cx * ny < nx * (ny - cy); cx++) {
          let bits;
          if (pending !== null) {
            bits = pending;
            pending = null;
          } else {
            const b = byte();
            pending = b >> 4;
            bits = b & 15;
          }
          ac.push((bits / 7.5 - 1) * scale);
        }
      }
      return ac;
    };
    const lAc = channel(lx, ly, lScale);
    const pAc = channel(3, 3, pScale * 1.25);
    const qAc = channel(3, 3, qScale * 1.25);
    const aAc = hasAlpha ? channel(5, 5, aScale) : [];

    // The inverse DCT, to RGBA.
    const w = ratio > 1 ? 32 : Math.round(32 * ratio);
    const h = ratio > 1 ? Math.round(32 / ratio) : 32;
    const rgba = new Uint8ClampedArray(w * h * 4);
    const fx = new Float64Array(7);
    const fy = new Float64Array(7);
    const clamp = (v) => Math.min(1, Math.max(0, v));
    for (let y = 0, i = 0; y < h; y++) {
      for (let x = 0; x < w; x++, i += 4) {
        let l = lDc;
        let p = pDc;
        let q = qDc;
        let a = aDc;
        for (let cx = 0, n = Math.max(lx, hasAlpha ? 5 : 3); cx < n; cx++) {
          fx[cx] = Math.cos((Math.PI / w) * (x + 0.5) * cx);
        }
        for (let cy = 0, n = Math.max(ly, hasAlpha ? 5 : 3); cy < n; cy++) {
          fy[cy] = Math.cos((Math.PI / h) * (y + 0.5) * cy);
        }
        for (let cy = 0, j = 0; cy < ly; cy++) {
          const fy2 = fy[cy] * 2;
          for (let cx = cy > 0 ? 0 : 1; cx * ly < lx * (ly - cy); cx++, j++) {
            l += lAc[j] * fx[cx] * fy2;
          }
        }
        for (let cy = 0, j = 0; cy < 3; cy++) {
          const fy2 = fy[cy] * 2;
          for (let cx = cy > 0 ? 0 : 1; cx < 3 - cy; cx++, j++) {
            const f = fx[cx] * fy2;
            p += pAc[j] * f;
            q += qAc[j] * f;
          }
        }
        if (hasAlpha) {
          for (let cy = 0, j = 0; cy < 5; cy++) {
            const fy2 = fy[cy] * 2;
            for (let cx = cy > 0 ? 0 : 1; cx < 5 - cy; cx++, j++) {
              a += aAc[j] * fx[cx] * fy2;
            }
          }
        }
        const b = l - (2 / 3) * p;
        const r = (3 * l - b + q) / 2;
        const g = r - q;
        // Truncated like the Rust version's `as u8`.
        rgba[i] = Math.floor(clamp(r) * 255);
        rgba[i + 1] = Math.floor(clamp(g) * 255);
        rgba[i + 2] = Math.floor(clamp(b) * 255);
        rgba[i + 3] = Math.floor(clamp(a) * 255);
      }
    }
    return { w, h, rgba };
  }

  // Standard base64 (as the job JSON carries it) to bytes.
  function base64ToBytes(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  // Draw a base64 ThumbHash on `canvas` (resized to the hash's pixels; CSS scales it up).
  function drawThumbHash(canvas, base64) {
    const { w, h, rgba } = thumbHashToRGBA(base64ToBytes(base64));
    canvas.width = w;
    canvas.height = h;
    const context = canvas.getContext("2d");
    context.putImageData(new ImageData(rgba, w, h), 0, 0);
  }

  global.ThumbHash = { thumbHashToRGBA, thumbHashToApproximateAspectRatio, base64ToBytes, drawThumbHash };
})(window);
