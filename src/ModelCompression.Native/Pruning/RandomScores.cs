namespace ModelCompression.Native.Pruning;

/// <summary>
/// The generator behind <see cref="PruningCriterion.Random"/> scores. Its seed comes from the user's seed and the
/// tensor by a fixed hash (FNV-1a), never from <see cref="HashCode"/>, which .NET salts per process: the seed in a
/// model's history must reproduce the model in any process.
/// </summary>
static class RandomScores
{
    public static Random For(int? seed, string name, int index)
    {
        uint h = 2166136261;
        void Add(int value) { for (int i = 0; i < 4; i++) { h ^= (byte)(value >> (8 * i)); h *= 16777619; } }
        Add(seed ?? 0);
        Add(index);
        foreach (char c in name) Add(c);
        return new Random((int)h);
    }
}
