using ModelCompression.Native.Data;

namespace ModelCompression.Engine.Tests.Quantization;

/// <summary>
/// Seeded synthetic "document" images for the OCR models: light paper with noise, dark text lines made of
/// glyph-like strokes of varying size and contrast. Normalized as PaddleOCR does: the detector with ImageNet
/// mean/std, the classifier and recognizer to [-1, 1].
/// </summary>
public static class SyntheticImages
{
    public static NamedArray Documents(string name, int count, int height, int width, int seed, bool imagenet)
    {
        var rng = new Random(seed);
        var data = new float[count * 3 * height * width];
        float[] mean = imagenet ? [0.485f, 0.456f, 0.406f] : [0.5f, 0.5f, 0.5f];
        float[] std = imagenet ? [0.229f, 0.224f, 0.225f] : [0.5f, 0.5f, 0.5f];
        var plane = new float[height * width];
        for (int n = 0; n < count; n++)
        {
            float paper = 0.75f + 0.25f * (float)rng.NextDouble();
            for (int i = 0; i < plane.Length; i++) plane[i] = paper + 0.04f * (float)(rng.NextDouble() - 0.5);
            int lineHeight = Math.Max(4, height / (imagenet ? 12 : 2));
            int lines = imagenet ? rng.Next(2, Math.Max(3, height / (2 * lineHeight))) : 1;
            for (int l = 0; l < lines; l++)
            {
                int top = rng.Next(0, Math.Max(1, height - lineHeight));
                int glyphH = Math.Max(3, (int)(lineHeight * (0.5 + 0.4 * rng.NextDouble())));
                int x = rng.Next(0, Math.Max(1, width / 8));
                int end = rng.Next(width / 2, width);
                float ink = 0.05f + 0.3f * (float)rng.NextDouble();
                while (x < end)
                {
                    int glyphW = Math.Max(2, rng.Next(glyphH / 3, glyphH));
                    // a glyph: two or three strokes inside its box
                    for (int s = 0; s < 3; s++)
                    {
                        bool vertical = rng.Next(2) == 0;
                        int sx = x + rng.Next(0, glyphW), sy = top + rng.Next(0, glyphH);
                        int len = vertical ? glyphH : glyphW, thick = Math.Max(1, glyphH / 8);
                        for (int a = 0; a < len; a++)
                            for (int t = 0; t < thick; t++)
                            {
                                int px = vertical ? x + Math.Min(glyphW - 1, sx - x + t) : x + a;
                                int py = vertical ? top + a : sy + t;
                                if (px < width && py < height) plane[py * width + px] = ink;
                            }
                    }
                    x += glyphW + rng.Next(1, Math.Max(2, glyphH / 3));
                }
            }
            for (int c = 0; c < 3; c++)
            {
                float tint = 1f + 0.05f * (float)(rng.NextDouble() - 0.5);
                int offset = (n * 3 + c) * height * width;
                for (int i = 0; i < plane.Length; i++) data[offset + i] = (Math.Clamp(plane[i] * tint, 0f, 1f) - mean[c]) / std[c];
            }
        }
        return new NamedArray(name, [count, 3, height, width], data);
    }
}
