SELECT 'Hello world!';
